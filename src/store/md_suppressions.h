/* md_suppressions: placeholder, being written (issue 7). */
#ifndef MD_SUPPRESSIONS_H
#define MD_SUPPRESSIONS_H
#include "md_core.h"
#endif
