/* md_route: placeholder, being written (issue 6). */
#ifndef MD_ROUTE_H
#define MD_ROUTE_H
#include "md_core.h"
#endif
