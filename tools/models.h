/* The pstrain subcommands that read trained models; each takes the
 * arguments after its name and returns an exit code. */
#ifndef PSTRAIN_TOOLS_MODELS_H
#define PSTRAIN_TOOLS_MODELS_H

int cmd_export(int argc, char **argv);
int cmd_evaluate(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_inspect(int argc, char **argv);

#endif
