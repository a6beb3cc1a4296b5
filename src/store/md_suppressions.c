/* md_suppressions: placeholder, being written (issue 7). */
#include "md_suppressions.h"
