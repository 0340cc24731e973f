/* The README's first manifest compiles this: `hello WHO` greets WHO. */
#include <stdio.h>

int main(int argc, char **argv) {
    printf("hello from %s\n", argc > 1 ? argv[1] : "assemble");
    return 0;
}
