#pragma once
#include <string>
#include <vector>

namespace demo {
// Splits text on whitespace and punctuation, lower-cased: a stand-in for a real tokenizer.
std::vector<std::string> tokenize(const std::string& text);
const char* version();
}  // namespace demo
