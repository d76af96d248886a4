/*
 * The master process (see master.c for the process model).
 */
#ifndef ALY_MASTER_H
#define ALY_MASTER_H

/*
 * Loads the configuration, binds, daemonizes unless foreground, forks the
 * workers and supervises them until TERM, INT or QUIT.  workers_override (-w)
 * replaces the "workers" directive when not 0.  Returns the exit status.
 */
int master_run(const char *config_path, int foreground, unsigned workers_override);

/* alyd -t: loads the configuration and its TLS files; prints the verdict; returns the exit status. */
int master_test_config(const char *config_path);

#endif
