/* md_events: placeholder, being written (issue 7). */
#include "md_events.h"
