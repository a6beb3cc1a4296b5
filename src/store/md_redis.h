#ifndef MD_REDIS_H
#define MD_REDIS_H
#include "md_core.h"
#endif
