/* Failpoints: named places where a test can stop a process, to kill it
 * there (e.g. a PS halfway through writing a checkpoint). Off unless the
 * environment holds PSTRAIN_FAILPOINT="WHO:NAME@N": the process whose log
 * name is WHO (e.g. ps1) stops the N-th time it reaches failpoint NAME, logs
 * "failpoint NAME reached" at WARN and sleeps until it is killed. */
#ifndef PSTRAIN_FAILPOINT_H
#define PSTRAIN_FAILPOINT_H

#include <stdbool.h>

void failpoint(const char *name);

/* An error failpoint: true when the caller should fail here as the real
 * fault would (a full disk), for the N-th through M-th time the process
 * reaches NAME, with PSTRAIN_FAILPOINT="WHO:NAME@N-M" ("@N": from the N-th
 * on); one WARN line each time. */
bool failpoint_error(const char *name);

#endif
