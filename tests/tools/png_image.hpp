#pragma once
// A minimal PNG decoder for tests: 8-bit RGB or RGBA, not interlaced (what Chromium's
// screenshots are). Enough to check a screenshot's size and that something was drawn.
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace vmmu::test {

struct PngImage {
  uint32_t width = 0, height = 0;
  unsigned channels = 0;       // 3 (RGB) or 4 (RGBA)
  std::vector<uint8_t> pixels;  // rows top to bottom, `channels` bytes a pixel
};

inline uint32_t png_be32(const std::string& s, size_t at) {
  return uint32_t(uint8_t(s[at])) << 24 | uint32_t(uint8_t(s[at + 1])) << 16 | uint32_t(uint8_t(s[at + 2])) << 8 | uint8_t(s[at + 3]);
}

// The image, or nothing (and `why` says what is wrong) for anything this decoder does not handle.
inline std::optional<PngImage> decode_png(const std::string& file, std::string& why) {
  static const char SIGNATURE[] = "\x89PNG\r\n\x1a\n";
  auto fail = [&](const std::string& what) {
    why = what;
    return std::optional<PngImage>();
  };
  if (file.size() < 8 || file.compare(0, 8, SIGNATURE, 8) != 0) return fail("no PNG signature");
  PngImage img;
  std::string idat;
  unsigned bit_depth = 0, colour_type = 0, interlace = 0;
  for (size_t at = 8; at + 12 <= file.size();) {
    const uint32_t len = png_be32(file, at);
    const std::string type = file.substr(at + 4, 4);
    if (at + 12 + len > file.size()) return fail("truncated chunk " + type);
    if (type == "IHDR" && len >= 13) {
      img.width = png_be32(file, at + 8);
      img.height = png_be32(file, at + 12);
      bit_depth = uint8_t(file[at + 16]);
      colour_type = uint8_t(file[at + 17]);
      interlace = uint8_t(file[at + 20]);
    } else if (type == "IDAT") {
      idat.append(file, at + 8, len);
    } else if (type == "IEND") {
      break;
    }
    at += 12 + len;
  }
  if (bit_depth != 8 || (colour_type != 2 && colour_type != 6) || interlace)
    return fail("not 8-bit RGB/RGBA non-interlaced");
  img.channels = colour_type == 6 ? 4 : 3;
  const size_t stride = size_t(img.width) * img.channels;
  std::vector<uint8_t> raw((stride + 1) * img.height);
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK || raw_len != raw.size())
    return fail("IDAT does not inflate to the image size");
  // Undo each row's filter (PNG spec, section 9): None, Sub, Up, Average, Paeth.
  img.pixels.resize(stride * img.height);
  for (uint32_t y = 0; y < img.height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    uint8_t* out = &img.pixels[y * stride];
    const uint8_t* up = y ? &img.pixels[(y - 1) * stride] : nullptr;
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= img.channels ? out[i - img.channels] : 0, b = up ? up[i] : 0,
                c = up && i >= img.channels ? up[i - img.channels] : 0;
      int predictor = 0;
      switch (filter) {
        case 0: predictor = 0; break;
        case 1: predictor = a; break;
        case 2: predictor = b; break;
        case 3: predictor = (a + b) / 2; break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: return fail("bad filter type");
      }
      out[i] = uint8_t(in[i] + predictor);
    }
  }
  return img;
}

}  // namespace vmmu::test
