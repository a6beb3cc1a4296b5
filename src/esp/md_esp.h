/* ESP accounts and drivers (issue 4: the sink; issue 6 adds the real providers). */
#ifndef MD_ESP_H
#define MD_ESP_H
#include "md_core.h"
#endif
