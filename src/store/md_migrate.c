#include "md_migrate.h"
/* stub: being written */
