/*
 * alyd: the Aly MCP server.  Everything but main() lives in libaly; the
 * command line is in alyd_main.c.
 */
#include <stddef.h>

#include "aly/alyd.h"

int main(int argc, char **argv)
{
    return alyd_main(argc, argv, NULL);
}
