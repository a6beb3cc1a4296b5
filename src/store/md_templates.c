#include "md_templates.h"
/* stub: being written */
