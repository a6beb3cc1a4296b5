#include "md_esp.h"
/* stub: being written */
