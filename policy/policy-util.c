/* Small sysfs helpers shared by the policy's readers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdarg.h>
#include <time.h>

#include "fileio.h"
#include "policy-readings.h"
#include "policy-util.h"

int policy_read_string_at(const char *dir, const char *key, char **ret) {
        _cleanup_free_ char *p = NULL;
        char *s;
        int r;

        if (asprintf(&p, "%s/%s", dir, key) < 0)
                return -ENOMEM;
        r = read_one_line_file(p, &s);
        if (r < 0)
                return r;
        *ret = s;
        return 0;
}

int policy_read_int_at(const char *dir, const char *key, int64_t *ret) {
        _cleanup_free_ char *s = NULL;
        char *end;
        long long v;
        int r;

        r = policy_read_string_at(dir, key, &s);
        if (r < 0)
                return r;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || end == s)
                return -EINVAL;
        while (*end == ' ' || *end == '\t')
                end++;
        if (*end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

uint64_t policy_now_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

void policy_readings_init(PolicyReadings *r) {
        *r = (PolicyReadings) {
                .power = { .battery_percent = NAN, .energy_now_wh = NAN, .power_now_w = NAN },
                .upower = { .percentage = NAN },
                .memory = { .psi_some_avg10 = NAN, .psi_full_avg10 = NAN },
        };
        for (unsigned i = 0; i < POLICY_MAX_SENSORS; i++)
                r->thermal.sensors[i].trip_c = NAN;
}

void policy_strscpyf(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(buf, size, fmt, ap);
        va_end(ap);
}
