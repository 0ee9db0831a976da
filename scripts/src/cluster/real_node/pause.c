/* The real node's sandbox ("pause") process: holds a pod's namespaces,
 * reaps orphaned children, exits on SIGINT/SIGTERM. Linked statically into
 * a FROM-scratch image (no public registry is reachable to pull one). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal) {
	(void)signal;
	_exit(0);
}

static void reap(int signal) {
	(void)signal;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	struct sigaction stop_action = {.sa_handler = stop};
	struct sigaction reap_action = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
	if (sigaction(SIGINT, &stop_action, NULL) < 0 || sigaction(SIGTERM, &stop_action, NULL) < 0 ||
	    sigaction(SIGCHLD, &reap_action, NULL) < 0) {
		return 1;
	}
	for (;;) {
		pause();
	}
}
