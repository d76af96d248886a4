/*
 * alyd: the Aly MCP server.  Everything but main() lives in libaly; the
 * command line is in cli.c.
 */
#include "aly/master.h"

int main(int argc, char **argv)
{
    return alyd_main(argc, argv);
}
