/*
 * Intrusive circular doubly-linked list with a sentinel head (nginx's
 * ngx_queue_t): the node lives inside the element, md_list_data() gets the
 * element back. No allocation, O(1) insert and remove; removing a node twice is
 * harmless because a removed node points at itself.
 */
#ifndef MD_LIST_H
#define MD_LIST_H

#include "md_core.h"

typedef struct md_list_s {
    struct md_list_s *prev;
    struct md_list_s *next;
} md_list_t;

#define md_list_data(node, type, member) md_container_of(node, type, member)

/* A head, or a node that is on no list. */
static inline void
md_list_init(md_list_t *l)
{
    l->prev = l->next = l;
}

static inline bool
md_list_empty(const md_list_t *head)
{
    return head->next == head;
}

static inline void
md_list_insert_head(md_list_t *head, md_list_t *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}

static inline void
md_list_insert_tail(md_list_t *head, md_list_t *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void
md_list_remove(md_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    md_list_init(n);
}

/* First and last element, or NULL when the list is empty. */
static inline md_list_t *
md_list_first(md_list_t *head)
{
    return md_list_empty(head) ? NULL : head->next;
}

static inline md_list_t *
md_list_last(md_list_t *head)
{
    return md_list_empty(head) ? NULL : head->prev;
}

#endif
