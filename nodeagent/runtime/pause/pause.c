/*
 * nodeagent's pause program: the first process of every pod sandbox.
 *
 * It holds the sandbox's namespaces (network, IPC, UTS, and PID when the pod shares its process
 * namespace) open by simply staying alive, reaps orphaned children that get re-parented to it
 * when it is PID 1 of a shared PID namespace, and exits 0 on SIGTERM or SIGINT so the runtime
 * can stop the sandbox promptly.
 *
 * Built with `gcc -static` by nodeagent.runtime.images into the image nodeagent.local/pause:1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "nodeagent-pause 1"

static void on_stop(int sig)
{
	/* Only async-signal-safe calls here. */
	static const char msg[] = "pause: stopping on signal\n";
	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* nothing to do: we are exiting anyway */
	}
	_exit(0);
}

static void on_child(int sig)
{
	int saved = errno;
	(void)sig;
	/* Reap every child that has exited; more than one may be behind a single SIGCHLD. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int install(int sig, void (*handler)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("%s\n", VERSION);
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not running as PID 1 (pid %d)\n", (int)getpid());
	if (install(SIGINT, on_stop, 0) < 0 || install(SIGTERM, on_stop, 0) < 0 ||
	    install(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
		perror("pause: sigaction");
		return 1;
	}
	for (;;)
		pause();
	/* not reached */
	return 42;
}
