/* Error messages handed back to callers (char **ret_error parameters of the file parsers). */
#pragma once

#include "macro.h"

/* Replaces *ret_error (freed) with the formatted message, NULL when out of memory; ret_error may
 * be NULL. Returns error, so that `return error_set(ret_error, -EBADMSG, "...", ...);` works. */
int error_set(char **ret_error, int error, const char *fmt, ...) _printf_(3, 4);
