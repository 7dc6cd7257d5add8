/* <model_dir>/config.json: what a run was, so that it can be compared with
 * another and repeated: every effective configuration key, TF_CONFIG
 * without secrets, the role that wrote it, and the versions. */
#ifndef PSTRAIN_DAEMON_RECORD_H
#define PSTRAIN_DAEMON_RECORD_H

#include <stddef.h>

#include "common/daemon/daemon.h"

/* Writes cfg's model_dir/config.json atomically (creating model_dir), with
 * TF_CONFIG from tf_config_file, or the environment when NULL. Call it once
 * the run really starts (its data loaded), so that a run refused at start
 * leaves no model_dir behind. 0, or -1 with err filled. */
int daemon_record_run(const config_t *cfg, const char *program, const char *tf_config_file,
                      char *err, size_t errlen);
/* The same for a daemon: its config, program and TF_CONFIG. */
int daemon_record_config(const daemon_t *d, char *err, size_t errlen);

#endif
