/* pstrain status and pstrain top (tools/status.c); each takes the arguments
 * after its name and returns an exit code. */
#ifndef PSTRAIN_TOOLS_STATUS_H
#define PSTRAIN_TOOLS_STATUS_H

int cmd_status(int argc, char **argv);
int cmd_top(int argc, char **argv);

#endif
