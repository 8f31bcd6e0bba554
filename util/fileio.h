/* File helpers. Every sysfs/procfs path is resolved through fs_path(), which honours the
 * root directory in $QUANTD_ROOT so that tests can point the daemon at a fake tree. */
#pragma once

#include <stddef.h>

/* Reads a whole file (at most max bytes; 0 = 64 MiB) into a NUL-terminated buffer. */
int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size);
/* Reads the first line of a (sysfs) file without the newline. */
int read_one_line_file(const char *path, char **ret);
/* Writes data atomically: a temporary file in the same folder, fsync, rename. */
int write_file_atomic(const char *path, const void *data, size_t size);

/* Returns "$QUANTD_ROOT/path" (or path when unset) in newly allocated memory, or NULL. */
char *fs_path(const char *path);
const char *fs_root(void);
