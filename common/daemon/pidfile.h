/* Pid files: written under a temp name and renamed, so a reader never sees a
 * partial one; a file left by a dead process is detected and replaced; one
 * naming a live process of the same program is an error (it still runs). */
#ifndef PSTRAIN_PIDFILE_H
#define PSTRAIN_PIDFILE_H

#include <stddef.h>

/* Writes getpid() to path. Fails when path names a live process whose
 * command name is the same as ours. */
int pidfile_write(const char *path, char *err, size_t errlen);
/* Removes path if it still holds our pid (a restarted copy may own it now). */
void pidfile_remove(const char *path);

#endif
