/* Lookup in the embedded shader table (generated, sorted by name). */
#include <string.h>

#include "shaders.h"

const QdShader *qd_shader_find(const char *name) {
        size_t lo = 0, hi = qd_shaders_count;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int c = strcmp(name, qd_shaders[mid].name);
                if (c == 0)
                        return &qd_shaders[mid];
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}
