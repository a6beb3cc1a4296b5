/* md_webhook: placeholder, being written (issue 7). */
#ifndef MD_WEBHOOK_H
#define MD_WEBHOOK_H
#include "md_core.h"
#endif
