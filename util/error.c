/* Error messages handed back to callers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"

int error_set(char **ret_error, int error, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        if (!ret_error)
                return error;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(*ret_error);
        *ret_error = s;
        return error;
}
