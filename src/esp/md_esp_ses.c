/* md_esp_ses: placeholder, being written (issue 6). */
#include "md_esp.h"
