#include <gtest/gtest.h>

#include "proto/frame.h"

using cubby::proto::FrameDecoder;
using cubby::proto::Json;

TEST(Frame, RoundTripsAcrossArbitrarySplits) {
  std::string wire = cubby::proto::encode({{"t", "out"}, {"s", 1}, {"d", Json::binary({1, 2, 3})}}, 7);
  wire += cubby::proto::encode({{"t", "exit"}, {"code", 7}});
  for (size_t split = 0; split <= wire.size(); ++split) {
    FrameDecoder d;
    d.feed(wire.data(), split);
    std::vector<cubby::proto::Frame> got;
    while (auto f = d.next().value()) got.push_back(std::move(*f));
    d.feed(wire.data() + split, wire.size() - split);
    while (auto f = d.next().value()) got.push_back(std::move(*f));
    ASSERT_EQ(got.size(), 2u) << "split " << split;
    EXPECT_EQ(got[0].channel, 7u);
    EXPECT_EQ(got[0].msg["d"].get_binary(), (std::vector<uint8_t>{1, 2, 3}));
    EXPECT_EQ(got[1].msg["code"], 7);
  }
}

TEST(Frame, RefusesOversizedAndMalformedFrames) {
  FrameDecoder big;
  std::string hdr = {'\x7f', '\0', '\0', '\0', '\0', '\0', '\0', '\0'};
  big.feed(hdr.data(), hdr.size());
  EXPECT_FALSE(big.next().has_value());

  FrameDecoder junk;
  std::string bad = {'\0', '\0', '\0', '\2', '\0', '\0', '\0', '\0', '\xc1', '\xc1'};
  junk.feed(bad.data(), bad.size());
  EXPECT_FALSE(junk.next().has_value());

  FrameDecoder notype;
  std::string w = cubby::proto::encode(Json{{"x", 1}});
  notype.feed(w.data(), w.size());
  EXPECT_FALSE(notype.next().has_value());
}
