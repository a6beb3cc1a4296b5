#include "md_queue.h"
/* stub: being written */
