/* Exit codes of every daemon and tool. One rule (DESIGN.md): permanent errors
 * exit in 1-127, so a supervisor does not restart into the same error;
 * failures that a restart may cure exit in 128-255 (Kubeflow's ExitCode
 * restart policy and systemd's RestartPreventExitStatus= read them so). */
#ifndef PSTRAIN_EXITCODE_H
#define PSTRAIN_EXITCODE_H

enum {
    EXIT_OK = 0,
    EXIT_USAGE = 2,         /* bad flag, config key or value, model spec, TF_CONFIG */
    EXIT_DATAERR = 65,      /* input data is corrupt or does not fit the model */
    EXIT_NODEVICE = 69,     /* device=gpu, but no GPU is usable (plugin, driver or device) */
    EXIT_UNAVAILABLE = 129, /* a peer stayed unreachable: may pass */
    EXIT_IOERR = 130,       /* could not write model_dir (disk full, NFS away): may pass */
};

#endif
