/* md_events: placeholder, being written (issue 7). */
#ifndef MD_EVENTS_H
#define MD_EVENTS_H
#include "md_core.h"
#endif
