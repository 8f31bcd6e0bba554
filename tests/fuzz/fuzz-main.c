/* Replays saved fuzz inputs through LLVMFuzzerTestOneInput, so that each corpus runs as a plain
 * test under meson without libFuzzer. Arguments: files or folders of inputs. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
        _cleanup_free_ char *buf = NULL;
        size_t n;
        int r;

        r = read_full_file(path, 0, &buf, &n);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(-r));
                return r;
        }
        /* Copy into an exactly sized buffer so ASan sees reads past the end. */
        _cleanup_free_ uint8_t *exact = malloc(n ? n : 1);
        if (!exact)
                return -ENOMEM;
        memcpy(exact, buf, n);
        LLVMFuzzerTestOneInput(exact, n);
        return 0;
}

int main(int argc, char **argv) {
        unsigned count = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;

                if (stat(argv[i], &st) < 0) {
                        perror(argv[i]);
                        return 1;
                }
                if (S_ISDIR(st.st_mode)) {
                        struct dirent **names;
                        int n = scandir(argv[i], &names, NULL, alphasort);
                        if (n < 0) {
                                perror(argv[i]);
                                return 1;
                        }
                        for (int j = 0; j < n; j++) {
                                if (names[j]->d_name[0] != '.') {
                                        _cleanup_free_ char *p = NULL;
                                        if (asprintf(&p, "%s/%s", argv[i], names[j]->d_name) < 0)
                                                return 1;
                                        if (run_file(p) < 0)
                                                return 1;
                                        count++;
                                }
                                free(names[j]);
                        }
                        free(names);
                } else {
                        if (run_file(argv[i]) < 0)
                                return 1;
                        count++;
                }
        }
        printf("replayed %u inputs\n", count);
        return count > 0 ? 0 : 1;
}
