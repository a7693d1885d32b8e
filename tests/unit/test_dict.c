/*  Dict: binary keys, replacement, deletion with tombstones, growth. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <stdio.h>
#include "dict.h"

static void test_binary_keys_with_zero_bytes_are_distinct(void **state)
{
    (void) state;
    dict_t *dict = dict_new();
    int a, b;
    assert_int_equal(dict_set(dict, "\0\1", 2, &a), 0);
    assert_int_equal(dict_set(dict, "\0\2", 2, &b), 0);
    assert_ptr_equal(dict_get(dict, "\0\1", 2), &a);
    assert_ptr_equal(dict_get(dict, "\0\2", 2), &b);
    assert_null(dict_get(dict, "\0", 1));
    dict_destroy(&dict);
}

static void test_set_replaces_and_delete_removes(void **state)
{
    (void) state;
    dict_t *dict = dict_new();
    int a, b;
    dict_set(dict, "k", 1, &a);
    dict_set(dict, "k", 1, &b);
    assert_int_equal(dict_size(dict), 1);
    assert_ptr_equal(dict_get(dict, "k", 1), &b);
    dict_delete(dict, "k", 1);
    dict_delete(dict, "k", 1);
    assert_null(dict_get(dict, "k", 1));
    assert_int_equal(dict_size(dict), 0);
    dict_destroy(&dict);
}

static void test_churn_through_many_keys_keeps_every_live_one(void **state)
{
    (void) state;
    dict_t *dict = dict_new();
    static int values[10000];
    char key[32];
    for (int i = 0; i < 10000; i++) {
        int length = snprintf(key, sizeof key, "key-%d", i);
        assert_int_equal(dict_set(dict, key, (size_t) length, &values[i]), 0);
        if (i >= 100) {
            length = snprintf(key, sizeof key, "key-%d", i - 100);
            dict_delete(dict, key, (size_t) length);
        }
    }
    assert_int_equal(dict_size(dict), 100);
    for (int i = 9900; i < 10000; i++) {
        int length = snprintf(key, sizeof key, "key-%d", i);
        assert_ptr_equal(dict_get(dict, key, (size_t) length), &values[i]);
    }
    dict_destroy(&dict);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_keys_with_zero_bytes_are_distinct),
        cmocka_unit_test(test_set_replaces_and_delete_removes),
        cmocka_unit_test(test_churn_through_many_keys_keeps_every_live_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
