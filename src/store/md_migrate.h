#ifndef MD_MIGRATE_H
#define MD_MIGRATE_H
#include "md_core.h"
#endif
