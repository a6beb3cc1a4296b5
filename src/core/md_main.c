#include "md_core.h"
#include <stdio.h>
/* stub: being written */
int
main(void)
{
    puts("mailerd " MD_VERSION);
    return 0;
}
