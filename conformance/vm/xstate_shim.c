/* LD_PRELOAD shim for linux.uml on hosts whose CPU has AMX (amx_tile in /proc/cpuinfo).
 *
 * Without it UML panics at init: "userspace - ptrace set fp regs failed, errno = 14".
 * The host kernel takes a PTRACE_SETREGSET of NT_X86_XSTATE only as the full XSAVE
 * buffer (11,008 bytes with AMX; anything shorter is EFAULT), while UML's buffer holds
 * 2,696 bytes (x87, SSE, AVX, AVX-512, PKRU). For every xstate access this shim reads
 * the tracee's full state; a write lays UML's bytes over it and writes the whole buffer
 * back. Only the AMX tile state, which no guest process uses, is left as the tracee has
 * it. Everything else goes straight to the system call.
 *
 * umlrun.sh builds it at test time (cc -O2 -shared -fPIC) into build/vm/ and preloads
 * it into linux.uml only; the guest's processes never see it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define NT_X86_XSTATE 0x202
#define FULL_XSTATE_MAX 32768

long ptrace(enum __ptrace_request request, ...)
{
	va_list ap;
	va_start(ap, request);
	pid_t pid = va_arg(ap, pid_t);
	void *addr = va_arg(ap, void *);
	void *data = va_arg(ap, void *);
	va_end(ap);

	if ((request == PTRACE_GETREGSET || request == PTRACE_SETREGSET) &&
	    (long)addr == NT_X86_XSTATE) {
		static __thread char full[FULL_XSTATE_MAX] __attribute__((aligned(64)));
		struct iovec *mine = data;
		struct iovec whole = {full, sizeof full};
		if (syscall(SYS_ptrace, PTRACE_GETREGSET, pid, addr, &whole) < 0)
			return -1;
		size_t n = mine->iov_len < whole.iov_len ? mine->iov_len : whole.iov_len;
		if (request == PTRACE_GETREGSET) {
			memcpy(mine->iov_base, full, n);
			mine->iov_len = n;
			return 0;
		}
		memcpy(full, mine->iov_base, n);
		return syscall(SYS_ptrace, PTRACE_SETREGSET, pid, addr, &whole);
	}
	if (request >= PTRACE_PEEKTEXT && request <= PTRACE_PEEKUSER) {
		/* glibc's convention: PEEK* return the word, errno tells errors apart */
		long word;
		if (syscall(SYS_ptrace, request, pid, addr, &word) < 0)
			return -1;
		errno = 0;
		return word;
	}
	return syscall(SYS_ptrace, request, pid, addr, data);
}
