/* Reads /proc/meminfo and /proc/pressure/memory, and opens a PSI trigger where the kernel allows. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"
#include "policy-readings.h"
#include "policy-util.h"

#define PSI_UNPRIV_WINDOW_USEC UINT64_C(2000000)

#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif

static int read_meminfo(PolicyMemory *m) {
        _cleanup_free_ char *path = fs_path("/proc/meminfo"), *buf = NULL;
        bool have_total = false, have_avail = false;
        int r;

        if (!path)
                return -ENOMEM;
        r = read_full_file(path, 1 << 16, &buf, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0;
        for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                unsigned long long kib;

                if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) {
                        m->mem_total = (uint64_t) kib * 1024;
                        have_total = true;
                } else if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
                        m->mem_available = (uint64_t) kib * 1024;
                        have_avail = true;
                }
        }
        m->meminfo_present = have_total && have_avail;
        return 0;
}

static int read_psi(PolicyMemory *m) {
        _cleanup_free_ char *path = fs_path("/proc/pressure/memory"), *buf = NULL;
        bool some = false, full = false;
        int r;

        if (!path)
                return -ENOMEM;
        r = read_full_file(path, 1 << 12, &buf, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0;
        for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                double v;

                if (sscanf(line, "some avg10=%lf", &v) == 1) {
                        m->psi_some_avg10 = v;
                        some = true;
                } else if (sscanf(line, "full avg10=%lf", &v) == 1) {
                        m->psi_full_avg10 = v;
                        full = true;
                }
        }
        m->psi_present = some;
        if (!full)
                m->psi_full_avg10 = NAN;
        return 0;
}

int policy_memory_read(PolicyMemory *m) {
        PolicyMemory n = { .psi_mode = m->psi_mode, .psi_event_usec = m->psi_event_usec };
        int r;

        r = read_meminfo(&n);
        if (r < 0)
                return r;
        r = read_psi(&n);
        if (r < 0)
                return r;
        if (!n.psi_present)
                n.psi_mode = POLICY_PSI_ABSENT;
        else if (n.psi_mode == POLICY_PSI_ABSENT)
                n.psi_mode = POLICY_PSI_POLL;
        *m = n;
        return 0;
}

static int psi_write_trigger(int fd, uint64_t stall_usec, uint64_t window_usec) {
        char buf[64];
        int n;

        n = snprintf(buf, sizeof buf, "some %llu %llu", (unsigned long long) stall_usec,
                     (unsigned long long) window_usec);
        if (write(fd, buf, (size_t) n + 1) < 0)
                return -errno;
        return 0;
}

int policy_psi_trigger_open(uint64_t stall_usec, uint64_t window_usec) {
        _cleanup_free_ char *path = fs_path("/proc/pressure/memory");
        _cleanup_close_ int fd = -EBADF;
        struct statfs sfs;
        int r;

        if (!path)
                return -ENOMEM;
        if (stall_usec == 0 || stall_usec > window_usec)
                return -EINVAL;
        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        /* Writing a trigger into a plain file of a fake tree would overwrite its readings. */
        if (fstatfs(fd, &sfs) < 0)
                return -errno;
        if (sfs.f_type != PROC_SUPER_MAGIC)
                return -EOPNOTSUPP;
        r = psi_write_trigger(fd, stall_usec, window_usec);
        if (r == -EINVAL && window_usec % PSI_UNPRIV_WINDOW_USEC != 0) {
                /* Without CAP_SYS_RESOURCE the kernel takes only windows that are multiples of
                 * 2 s: keep the stall/window ratio on the next such window. */
                uint64_t w = DIV_ROUND_UP(window_usec, PSI_UNPRIV_WINDOW_USEC) * PSI_UNPRIV_WINDOW_USEC;
                r = psi_write_trigger(fd, stall_usec * (w / window_usec) +
                                              stall_usec * (w % window_usec) / window_usec, w);
        }
        if (r < 0)
                return r == -EINVAL || r == -EPERM || r == -EACCES ? -EOPNOTSUPP : r;
        return TAKE_FD(fd);
}

const char *policy_psi_mode_to_string(PolicyPsiMode m) {
        switch (m) {
        case POLICY_PSI_ABSENT:
                return "absent";
        case POLICY_PSI_POLL:
                return "poll";
        case POLICY_PSI_TRIGGER:
                return "trigger";
        }
        return "?";
}
