#include "md_core.h"
/* stub: being written */
