/* md_esp_sendgrid: placeholder, being written (issue 6). */
#include "md_esp.h"
