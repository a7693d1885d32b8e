/*  Endpoint: one address per broker, PULL on PORT and ROUTER on PORT+1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "asyncq/endpoint.h"

static void s_expect(const char *address, int for_bind, const char *pull, const char *router)
{
    aq_endpoint_t endpoint;
    assert_int_equal(aq_endpoint_parse(address, for_bind, &endpoint), AQ_OK);
    char buf[AQ_ENDPOINT_MAX];
    aq_endpoint_pull(&endpoint, buf, sizeof buf);
    assert_string_equal(buf, pull);
    aq_endpoint_router(&endpoint, buf, sizeof buf);
    assert_string_equal(buf, router);
}

static void test_host_alone_uses_the_default_port(void **state)
{
    (void) state;
    s_expect("localhost", 0, "tcp://localhost:5557", "tcp://localhost:5558");
}

static void test_host_and_port_put_router_on_the_next_port(void **state)
{
    (void) state;
    s_expect("broker:6000", 0, "tcp://broker:6000", "tcp://broker:6001");
    s_expect("tcp://10.0.0.1:7000", 0, "tcp://10.0.0.1:7000", "tcp://10.0.0.1:7001");
    s_expect("[::1]:7000", 0, "tcp://[::1]:7000", "tcp://[::1]:7001");
}

static void test_ipc_path_gets_two_suffixes(void **state)
{
    (void) state;
    s_expect("ipc:///tmp/aq", 0, "ipc:///tmp/aq.pull", "ipc:///tmp/aq.router");
}

static void test_bind_defaults_to_all_interfaces(void **state)
{
    (void) state;
    s_expect("*", 1, "tcp://*:5557", "tcp://*:5558");
    s_expect(":6000", 1, "tcp://*:6000", "tcp://*:6001");
}

static void test_bad_addresses_are_refused(void **state)
{
    (void) state;
    const char *bad[] = {"", "host:", "host:abc", "host:70000", "host:0", "*", "udp://x:1",
                         "tcp://host", "a:b:c", "ipc://"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        aq_endpoint_t endpoint;
        assert_int_equal(aq_endpoint_parse(bad[i], 0, &endpoint), AQ_BAD_ENDPOINT);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_alone_uses_the_default_port),
        cmocka_unit_test(test_host_and_port_put_router_on_the_next_port),
        cmocka_unit_test(test_ipc_path_gets_two_suffixes),
        cmocka_unit_test(test_bind_defaults_to_all_interfaces),
        cmocka_unit_test(test_bad_addresses_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
