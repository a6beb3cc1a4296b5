/*
 * The queue between accepting and sending (issue 4 form; issue 5 hardens it).
 * Redis streams per priority ("mailerd:q:transactional", "mailerd:q:bulk") with
 * one consumer group "mailerd", and a sorted set "mailerd:q:scheduled" (score:
 * send_at) moved into the streams when due. PostgreSQL stays the system of
 * record: an entry only names a message id.
 */
#ifndef MD_QUEUE_H
#define MD_QUEUE_H

#include "md_core.h"

/*
 * After COMMIT: puts messages on the queue (pipelined XADD / ZADD). Fire and
 * forget: a failure is logged and counted; the message stays queued in
 * PostgreSQL and is picked up again by the recovery scan.
 */
void md_queue_push(const char *const *ids, const int *priority, const double *send_at, size_t n);

struct md_app_s;
int md_queue_app_init(struct md_app_s *app);     /* consumer group, scripts, dispatcher start */
void md_queue_app_shutdown(struct md_app_s *app); /* stop taking work; hand back what is held */
void md_queue_app_destroy(struct md_app_s *app);

#endif
