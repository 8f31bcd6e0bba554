/* Internal helpers of the policy library: small sysfs reads relative to a folder. */
#pragma once

#include <dirent.h>
#include <stdint.h>

#include "macro.h"

static inline void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

/* dir is already resolved through fs_path(). First line, without the newline. */
int policy_read_string_at(const char *dir, const char *key, char **ret);
int policy_read_int_at(const char *dir, const char *key, int64_t *ret);

uint64_t policy_now_usec(void); /* CLOCK_MONOTONIC */

/* snprintf into an array, truncating quietly: names from sysfs may be long. */
void policy_strscpyf(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);
#define strscpyf(buf, ...) policy_strscpyf((buf), sizeof(buf), __VA_ARGS__)
