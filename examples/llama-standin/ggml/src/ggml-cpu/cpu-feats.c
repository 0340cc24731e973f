// Whether this CPU runs a CPU-backend variant: cpuid and the OS-enabled register state,
// checked for each instruction set the variant was compiled with (GGML_<FEATURE> defines).
// The score grows with the instruction sets, AVX-512 above AVX-VNNI, so the richest usable
// variant wins.
// Compiled without the variant's -m flags, so the check itself runs on any x86-64 CPU.
#if defined(__x86_64__)
#include <cpuid.h>
#endif

int ggml_cpu_variant_score(void);

#if defined(__x86_64__)
struct regs { unsigned a, b, c, d; };

static struct regs leaf(unsigned l, unsigned sub) {
    struct regs r = {0, 0, 0, 0};
    __cpuid_count(l, sub, r.a, r.b, r.c, r.d);
    return r;
}

static unsigned long long xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long) hi << 32) | lo;
}
#endif

#define NEED(cond, weight) do { if (!(cond)) return 0; score += (weight); } while (0)

int ggml_cpu_variant_score(void) {
    int score = 1;
#if defined(__x86_64__)
    unsigned max_leaf = __get_cpuid_max(0, 0);
    struct regs l1 = leaf(1, 0);
    struct regs l7 = max_leaf >= 7 ? leaf(7, 0) : (struct regs) {0, 0, 0, 0};
    struct regs l71 = max_leaf >= 7 ? leaf(7, 1) : (struct regs) {0, 0, 0, 0};
    int osxsave = (l1.c >> 27) & 1;
    unsigned long long xcr = osxsave ? xcr0() : 0;
    int os_avx = (xcr & 0x6) == 0x6;
    int os_avx512 = os_avx && (xcr & 0xe0) == 0xe0;
    int os_amx = (xcr & 0x60000) == 0x60000;
    (void) l7; (void) l71; (void) os_avx512; (void) os_amx;  // unused by the variants that need less
#ifdef GGML_SSE42
    NEED((l1.c >> 20) & 1, 1 << 1);
#endif
#ifdef GGML_AVX
    NEED(((l1.c >> 28) & 1) && os_avx, 1 << 2);
#endif
#ifdef GGML_F16C
    NEED((l1.c >> 29) & 1, 1 << 3);
#endif
#ifdef GGML_FMA
    NEED((l1.c >> 12) & 1, 1 << 4);
#endif
#ifdef GGML_AVX2
    NEED(((l7.b >> 5) & 1) && os_avx, 1 << 5);
#endif
#ifdef GGML_BMI2
    NEED((l7.b >> 8) & 1, 1 << 6);
#endif
#ifdef GGML_AVX512
    NEED(((l7.b >> 16) & 1) && ((l7.b >> 17) & 1) && ((l7.b >> 28) & 1) && ((l7.b >> 30) & 1) && ((l7.b >> 31) & 1)
         && os_avx512, 1 << 8);
#endif
#ifdef GGML_AVX512_VBMI
    NEED((l7.c >> 1) & 1, 1 << 9);
#endif
#ifdef GGML_AVX512_VNNI
    NEED((l7.c >> 11) & 1, 1 << 10);
#endif
#ifdef GGML_AVX512_BF16
    NEED((l71.a >> 5) & 1, 1 << 11);
#endif
#ifdef GGML_AVX_VNNI
    NEED(((l71.a >> 4) & 1) && os_avx, 1 << 7);
#endif
#ifdef GGML_AMX_TILE
    NEED(((l7.d >> 24) & 1) && os_amx, 1 << 12);
#endif
#ifdef GGML_AMX_INT8
    NEED(((l7.d >> 25) & 1) && os_amx, 1 << 13);
#endif
#endif
    return score;
}
