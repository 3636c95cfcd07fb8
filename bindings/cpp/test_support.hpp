// Checks shared by the C++ binding's test programs (test_llmint8.cpp,
// test_cuda.cpp): each counts, and prints where it failed.
#pragma once

#include <cstdio>
#include <cstring>

#include "llmint8.hpp"

static int failures = 0, checks = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        ++checks;                                                                    \
        if (!(cond)) {                                                               \
            ++failures;                                                              \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

// Expects `expr` to throw llmint8::Error with `status` and a message containing `needle`.
#define CHECK_THROWS(expr, want_status, needle)                                      \
    do {                                                                             \
        ++checks;                                                                    \
        bool thrown_ = false;                                                        \
        try {                                                                        \
            (void)(expr);                                                            \
        } catch (const llmint8::Error& e_) {                                         \
            thrown_ = e_.status() == (want_status) && std::strstr(e_.what(), (needle)) != nullptr; \
            if (!thrown_) std::fprintf(stderr, "%s:%d: wrong error: %s\n", __FILE__, __LINE__, e_.what()); \
        }                                                                            \
        if (!thrown_) {                                                              \
            ++failures;                                                              \
            std::fprintf(stderr, "%s:%d: %s did not throw %s\n", __FILE__, __LINE__, #expr, #want_status); \
        }                                                                            \
    } while (0)
