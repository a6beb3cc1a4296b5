/* md_track: placeholder, being written (issue 7). */
#ifndef MD_TRACK_H
#define MD_TRACK_H
#include "md_core.h"
#endif
