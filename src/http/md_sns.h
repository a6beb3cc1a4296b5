/* md_sns: placeholder, being written (issue 7). */
#ifndef MD_SNS_H
#define MD_SNS_H
#include "md_core.h"
#endif
