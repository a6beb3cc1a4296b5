/*
 * The tracking routes' store: PLACEHOLDER (being written). Registers its
 * statements at app init.
 */
#ifndef MD_TRACKING_STORE_H
#define MD_TRACKING_STORE_H

#include "md_core.h"

struct md_app_s;
int md_tracking_store_app_init(struct md_app_s *app);
void md_tracking_store_app_destroy(struct md_app_s *app);

#endif
