/* <model_dir>/config.json: what a run was, so that it can be compared with
 * another and repeated: every effective configuration key, TF_CONFIG
 * without secrets, the role that wrote it, and the versions. */
#ifndef PSTRAIN_DAEMON_RECORD_H
#define PSTRAIN_DAEMON_RECORD_H

#include <stddef.h>

#include "common/daemon/daemon.h"

/* Writes model_dir/config.json atomically (creating model_dir). 0, or -1
 * with err filled. */
int daemon_record_config(const daemon_t *d, char *err, size_t errlen);

#endif
