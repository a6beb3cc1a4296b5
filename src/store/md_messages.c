#include "md_messages.h"
/* stub: being written */
