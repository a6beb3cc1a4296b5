/* md_track: placeholder, being written (issue 7). */
#include "md_track.h"
