/*  The asyncq control command: one function per subcommand. */
#ifndef CLI_CLI_H
#define CLI_CLI_H

int cli_put(int argc, char **argv);
int cli_join(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_dead(int argc, char **argv);
int cli_shutdown(int argc, char **argv);
int cli_demo(int argc, char **argv);
int cli_keygen(int argc, char **argv);

#endif
