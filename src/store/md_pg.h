#ifndef MD_PG_H
#define MD_PG_H
#include "md_core.h"
#endif
