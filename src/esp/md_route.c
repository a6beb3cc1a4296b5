/* md_route: placeholder, being written (issue 6). */
#include "md_route.h"
