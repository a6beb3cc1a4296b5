/* tools/mock-esp: placeholder, being written (issue 6). */
#include <stdio.h>
int
main(void)
{
    fprintf(stderr, "mock-esp: not built yet\n");
    return 1;
}
