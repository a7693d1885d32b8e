/*  Intrusive doubly linked list: the node lives inside the element, so
    linking and unlinking never allocate and unlinking is O(1). */
#ifndef BROKER_LIST_H
#define BROKER_LIST_H

#include <stddef.h>

typedef struct list_node {
    struct list_node *prev, *next;
} list_node_t;

#define list_entry(node, type, member) ((type *) ((char *) (node) - offsetof(type, member)))

/*  A head, or a node that is in no list, points at itself. */
static inline void list_init(list_node_t *node)
{
    node->prev = node->next = node;
}

static inline int list_empty(const list_node_t *head)
{
    return head->next == head;
}

static inline int list_linked(const list_node_t *node)
{
    return node->next != node;
}

static inline void list_insert_between(list_node_t *node, list_node_t *prev, list_node_t *next)
{
    node->prev = prev;
    node->next = next;
    prev->next = node;
    next->prev = node;
}

static inline void list_push_back(list_node_t *head, list_node_t *node)
{
    list_insert_between(node, head->prev, head);
}

static inline void list_push_front(list_node_t *head, list_node_t *node)
{
    list_insert_between(node, head, head->next);
}

static inline void list_remove(list_node_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    list_init(node);
}

static inline list_node_t *list_first(const list_node_t *head)
{
    return list_empty(head) ? NULL : head->next;
}

static inline list_node_t *list_last(const list_node_t *head)
{
    return list_empty(head) ? NULL : head->prev;
}

#endif
